/* Falcon charts: draws every <figure class="chart-slot"> from the JSON chart its page embeds,
 * and follows queued backtest jobs (.job-status) until they finish (falcon.js polls them).
 *
 * A chart is {"series": [{"name", "type": "line"|"area"|"candlestick", "data", "color",
 * "percent", "markers"}], "note"} as built by falcon/web/charts.py, read from
 * <script type="application/json" id="..."> (the CSP forbids inline scripts, so data travels
 * as inert JSON and this file, served from /static, does the drawing). Drawing uses the vendored
 * TradingView Lightweight Charts (static/vendor/lightweight-charts, Apache-2.0).
 *
 * Text from the server (series names, job notes, errors) only ever goes into the page through
 * textContent, never innerHTML: a job's error can quote what a strategy author wrote.
 */
(function () {
  "use strict";

  function readJSON(id) {
    var node = id && document.getElementById(id);
    if (!node) { return null; }
    try { return JSON.parse(node.textContent); } catch (e) { return null; }
  }

  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name);
    return value && value.trim() ? value.trim() : fallback;
  }

  /* "#rrggbb" with an alpha, for area fills. */
  function fade(hex, alpha) {
    var m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex || "");
    if (!m) { return hex; }
    return "rgba(" + parseInt(m[1], 16) + "," + parseInt(m[2], 16) + "," + parseInt(m[3], 16) + "," + alpha + ")";
  }

  function percentFormat() {
    return { type: "custom", minMove: 0.01, formatter: function (v) { return v.toFixed(1) + " %"; } };
  }

  function hasData(chart) {
    return chart && Array.isArray(chart.series) && chart.series.some(function (s) {
      return Array.isArray(s.data) && s.data.length > 0;
    });
  }

  function legend(series) {
    var ul = document.createElement("ul");
    ul.className = "chart-legend";
    series.forEach(function (s) {
      if (!s.data || !s.data.length || s.type === "candlestick") { return; }
      var li = document.createElement("li");
      var swatch = document.createElement("span");
      swatch.className = "swatch";
      // The CSP allows no style attributes in markup; CSSOM from a script file is allowed.
      swatch.style.background = s.color || "#888";
      var name = document.createElement("span");
      name.textContent = s.name;
      li.appendChild(swatch);
      li.appendChild(name);
      ul.appendChild(li);
    });
    return ul;
  }

  function addSeries(lib, chart, s, index) {
    var api;
    if (s.type === "candlestick") {
      api = chart.addSeries(lib.CandlestickSeries, {
        upColor: "#26a69a", downColor: "#ef5350", borderVisible: false,
        wickUpColor: "#26a69a", wickDownColor: "#ef5350"
      });
    } else if (s.type === "area") {
      api = chart.addSeries(lib.AreaSeries, {
        lineColor: s.color, lineWidth: 1, topColor: fade(s.color, 0.05), bottomColor: fade(s.color, 0.35),
        invertFilledArea: false, priceLineVisible: false
      });
    } else {
      api = chart.addSeries(lib.LineSeries, {
        color: s.color, lineWidth: index === 0 ? 2 : 1, priceLineVisible: false,
        lastValueVisible: index < 2, crosshairMarkerVisible: index < 2
      });
    }
    if (s.percent) {
      api.applyOptions({ priceFormat: percentFormat() });
    } else if (typeof s.precision === "number") {
      api.applyOptions({ priceFormat: { type: "price", precision: s.precision, minMove: Math.pow(10, -s.precision) } });
    }
    api.setData(s.data);
    return api;
  }

  function draw(figure) {
    var lib = window.LightweightCharts;
    var spec = readJSON(figure.getAttribute("data-source"));
    if (!lib || !hasData(spec)) {
      figure.classList.add("chart-empty");
      return;
    }
    var box = document.createElement("div");
    box.className = "chart-canvas";
    figure.insertBefore(box, figure.firstChild);
    figure.insertBefore(legend(spec.series), box);
    figure.classList.add("chart-drawn");
    var first = spec.series[0].data[0];
    var fg = cssVar("--fg", "#1b1f24");
    var line = cssVar("--line", "#dde1e6");
    var chart = lib.createChart(box, {
      autoSize: true,  // follows the box: phone, rotation, window resize
      // The library's own logo injects a <style> element, which the CSP refuses; the page's
      // .chart-credit line carries the attribution and link its licence asks for instead.
      layout: { background: { color: "transparent" }, textColor: fg, fontSize: 11, attributionLogo: false },
      grid: { vertLines: { color: fade(line, 0.5) || line }, horzLines: { color: line } },
      rightPriceScale: { borderColor: line },
      timeScale: { borderColor: line, timeVisible: typeof first.time === "number", secondsVisible: false },
      // Vertical swipes scroll the page on a phone instead of being caught by the chart.
      handleScroll: { vertTouchDrag: false },
      crosshair: { mode: 0 }
    });
    var markers = 0;
    var plugin = null;
    spec.series.forEach(function (s, i) {
      if (!s.data || !s.data.length) { return; }
      var api = addSeries(lib, chart, s, i);
      if (s.markers && s.markers.length && lib.createSeriesMarkers) {
        plugin = lib.createSeriesMarkers(api, s.markers);
        markers += s.markers.length;
      }
    });
    chart.timeScale().fitContent();
    figure.setAttribute("data-drawn", String(spec.series.length));
    figure.setAttribute("data-markers", String(markers));
    // Handles for the browser tests and the console: the chart and its markers plugin.
    figure.falconChart = chart;
    figure.falconMarkers = plugin;
  }

  /* --- queued backtests: followed by the shared job panel of falcon.js ------------------- */

  var BACKTEST = {
    resultId: function (result) {
      return result && (result.run_id || result.backtest_id || result.backtest_run_id);
    },
    linkText: "Open backtest #",
    doneText: "Done: reload the page for the new backtest."
  };

  function init() {
    document.querySelectorAll("figure.chart-slot[data-source]").forEach(function (figure) {
      try { draw(figure); } catch (e) { figure.classList.add("chart-error"); }
    });
    if (window.falcon) { window.falcon.followJobs(BACKTEST); }
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  }

  document.addEventListener("DOMContentLoaded", init);
})();
