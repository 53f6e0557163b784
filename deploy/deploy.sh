#!/usr/bin/env bash
# Falcon's one entry point for operators: set up, deploy to and run the three-node install
# (db, compute, web) with Ansible.
#
#   deploy/deploy.sh ACTION TARGET [ARGS...]
#
# ACTION   setup     provision the node(s) and install the current code (everything, from scratch)
#          deploy    build the current code and install it on compute/web, migrate once, restart
#          status    the units of each node and /healthz
#          logs      follow the journal of Falcon's services (extra ARGS go to journalctl)
#          start | stop | restart   the node type's services
#          backup    fetch a pg_dump and the config into $FALCON_BACKUP_DIR/<time>/
#          restore   put a backup back: deploy.sh restore all [BACKUP_DIR] (default: the newest)
#          build     only build the release for the given CPU architectures, no node touched:
#                    deploy.sh build aarch64 [x86_64]  (then FALCON_RELEASE_DIR installs it)
# TARGET   all | db | compute | web
#
# Environment:
#   FALCON_INVENTORY     inventory file (default ansible/inventory/production/hosts.yml)
#   FALCON_SECRETS_FILE  the operator's secrets (default deploy/secrets.env; see secrets.env.example)
#   FALCON_DEPLOY_VENV   virtualenv with Ansible (default deploy/.venv-deploy, made on first use)
#   FALCON_BUILD_DIR     where wheels are built (default deploy/build)
#   FALCON_BACKUP_DIR    where backups go (default deploy/backups)
#   FALCON_DEPLOY_ARCHES CPU architectures to build for (default: asked from the nodes), e.g.
#                        "x86_64 aarch64"
#   FALCON_RELEASE_DIR   install this already built release (a $FALCON_BUILD_DIR/release folder)
#                        instead of building one from the working tree
#   FALCON_PYTHON_VERSION  the nodes' Python (default 3.11, Debian bookworm / Raspberry Pi OS)
#   FALCON_ANSIBLE_ARGS  extra ansible-playbook arguments, e.g. "-v" or "--check --diff"
#
# Secrets never appear in arguments, output or the repository: Ansible reads the secrets file
# itself (its path is all that is passed) and every task that touches a secret has no_log.
#
# Examples:
#   cp deploy/secrets.env.example deploy/secrets.env && chmod 600 deploy/secrets.env && $EDITOR ...
#   deploy/deploy.sh setup all
#   deploy/deploy.sh deploy compute
#   deploy/deploy.sh logs compute -n 100 --no-pager
#   FALCON_INVENTORY=ansible/inventory/single/hosts.yml deploy/deploy.sh status all
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ANSIBLE_DIR="$REPO/ansible"
DEPLOY_DIR="$REPO/deploy"
VENV=${FALCON_DEPLOY_VENV:-$DEPLOY_DIR/.venv-deploy}
BUILD_DIR=${FALCON_BUILD_DIR:-$DEPLOY_DIR/build}
BACKUP_DIR=${FALCON_BACKUP_DIR:-$DEPLOY_DIR/backups}
PY_VERSION=${FALCON_PYTHON_VERSION:-3.11}
export ANSIBLE_CONFIG="$ANSIBLE_DIR/ansible.cfg"
export ANSIBLE_FORCE_COLOR=${ANSIBLE_FORCE_COLOR:-$([[ -t 1 ]] && echo 1 || echo 0)}
# Ansible's own log file would be one more place for output to end up: never.
unset ANSIBLE_LOG_PATH

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$1" >&2; exit "${2:-1}"; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

abspath() {  # a path as given, relative to the current directory or else to ansible/
    local p=$1
    if [[ $p == /* ]]; then
        printf '%s\n' "$p"
    elif [[ -e $p ]]; then
        printf '%s\n' "$(cd "$(dirname "$p")" 2>/dev/null && pwd)/$(basename "$p")"
    elif [[ -e "$ANSIBLE_DIR/$p" ]]; then
        printf '%s\n' "$ANSIBLE_DIR/$p"
    else
        printf '%s\n' "$p"
    fi
}

INVENTORY=$(abspath "${FALCON_INVENTORY:-$ANSIBLE_DIR/inventory/production/hosts.yml}")
SECRETS=$(abspath "${FALCON_SECRETS_FILE:-$DEPLOY_DIR/secrets.env}")
RELEASE_DIR=$(abspath "${FALCON_RELEASE_DIR:-$BUILD_DIR/release}")
PROBE_ERR=$(mktemp "${TMPDIR:-/tmp}/falcon-deploy.XXXXXX")
trap 'rm -f "$PROBE_ERR"' EXIT

# ------------------------------------------------------------------ preconditions

ensure_venv() {
    if [[ -x "$VENV/bin/ansible-playbook" ]]; then
        return
    fi
    log "creating $VENV with Ansible (once; about a minute)"
    command -v python3 >/dev/null || die "python3 is needed on this machine"
    python3 -m venv "$VENV" || die "cannot create $VENV (apt install python3-venv?)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$DEPLOY_DIR/requirements.txt" >&2 || die "cannot install Ansible into $VENV"
}

check_inventory() {
    [[ -f $INVENTORY ]] || die "inventory $INVENTORY not found: copy ansible/inventory/production/ \
and set FALCON_INVENTORY to your hosts.yml"
}

check_secrets() {
    [[ -f $SECRETS ]] || die "secrets file $SECRETS not found: cp deploy/secrets.env.example \
$SECRETS, chmod 600 it and fill it in (or set FALCON_SECRETS_FILE)"
    [[ -r $SECRETS ]] || die "secrets file $SECRETS is not readable"
    local key
    for key in FALCON_DATABASE_URL FALCON_WEB_SECRET_KEY; do
        grep -Eq "^[[:space:]]*${key}=.+" "$SECRETS" || die "$SECRETS has no value for $key"
    done
    if [[ -n $(find "$SECRETS" -perm /077 2>/dev/null) ]]; then
        log "warning: $SECRETS can be read by other users: chmod 600 $SECRETS"
    fi
}

ANSIBLE_EXTRA=()
read -r -a ANSIBLE_EXTRA <<<"${FALCON_ANSIBLE_ARGS:-}"

# Ask the node(s) for their CPU architecture: one round trip, before anything changes anywhere,
# that also says clearly which node cannot be reached (one line per node, exit 3). Prints the
# architectures, one per line.
probe_nodes() {
    local pattern=$1 out rc=0
    out=$(ANSIBLE_LOAD_CALLBACK_PLUGINS=1 ANSIBLE_STDOUT_CALLBACK=ansible.builtin.json \
        "$VENV/bin/ansible" "$pattern" -i "$INVENTORY" \
        -m ansible.builtin.setup -a 'filter=ansible_architecture gather_subset=!all' \
        2>"$PROBE_ERR") || true
    out=$("$VENV/bin/python" "$DEPLOY_DIR/node_facts.py" "$INVENTORY" "$pattern" <<<"$out") || rc=$?
    if [[ $rc -ne 0 ]]; then
        # Ansible's own complaint (a broken inventory, say) is the best explanation there is
        if [[ $rc -eq 4 && -s $PROBE_ERR ]]; then
            grep -E '^\[?(ERROR|WARNING)' "$PROBE_ERR" | head -n 3 >&2 || true
        fi
        exit "$rc"
    fi
    awk '{print $2}' <<<"$out" | sort -u
}

# ------------------------------------------------------------------ release build

platform_args() {  # pip --platform flags for a Debian bookworm (glibc 2.36) node of arch $1
    local arch=$1 minor
    for minor in $(seq 17 36); do
        printf -- '--platform\nmanylinux_2_%s_%s\n' "$minor" "$arch"
    done
    printf -- '--platform\nmanylinux2014_%s\n' "$arch"
}

# Build falcon's wheel and fetch binary wheels of every dependency for each architecture, so that
# the nodes only unpack (no compiler, no PyPI access on the nodes). Writes, per arch,
# $BUILD_DIR/release/falcon-release-<arch>.tar and .id (content hash).
build_release() {
    local arches=("$@") arch dist tmp id wheel
    [[ ${#arches[@]} -gt 0 ]] || die "no architecture to build for"
    mkdir -p "$BUILD_DIR/release"
    dist="$BUILD_DIR/dist"
    rm -rf "$dist" && mkdir -p "$dist"
    log "building the falcon wheel"
    # the same source gives the same wheel (and the same release id): no spurious redeploys
    SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800} "$VENV/bin/python" -m pip wheel --quiet \
        --disable-pip-version-check --no-deps --wheel-dir "$dist" "$REPO" >&2 \
        || die "building the falcon wheel failed"
    wheel=$(ls "$dist"/falcon_trader-*.whl)
    for arch in "${arches[@]}"; do
        case $arch in
            x86_64 | aarch64) ;;
            amd64) arch=x86_64 ;;
            arm64) arch=aarch64 ;;
            *) die "no wheels for architecture $arch (x86_64 and aarch64 are supported)" ;;
        esac
        log "fetching dependency wheels for $arch (Python $PY_VERSION)"
        tmp="$BUILD_DIR/tmp-$arch"
        rm -rf "$tmp" && mkdir -p "$tmp/wheels"
        local plat=()
        mapfile -t plat < <(platform_args "$arch")
        "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check \
            --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
            --abi "cp${PY_VERSION/./}" --abi abi3 --abi none "${plat[@]}" \
            --dest "$tmp/wheels" "$wheel" >&2 \
            || die "fetching wheels for $arch failed (a dependency without a binary wheel for $arch?)"
        cp "$wheel" "$tmp/wheels/"
        # the lock: every wheel pinned by name and version, installed with --no-index
        (cd "$tmp/wheels" && printf '%s\n' *.whl | sort | awk -F- '{printf "%s==%s\n", $1, $2}') \
            > "$tmp/requirements.lock"
        id=$(cd "$tmp" && sha256sum requirements.lock wheels/*.whl | sha256sum | cut -c1-16)
        rm -rf "${BUILD_DIR:?}/$id" && mv "$tmp" "$BUILD_DIR/$id"
        tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
            -cf "$BUILD_DIR/release/falcon-release-$arch.tar" -C "$BUILD_DIR" "$id"
        printf '%s\n' "$id" > "$BUILD_DIR/release/falcon-release-$arch.id"
        # older releases of any architecture (16 hex digits) go; this one stays
        find "$BUILD_DIR" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended \
            -regex '.*/[0-9a-f]{16}' ! -name "$id" ! -name "$(cat "$BUILD_DIR"/release/*.id \
            2>/dev/null | grep -v "^$id$" | head -n 1 || true)" -exec rm -rf {} +
        log "release $id for $arch: $(wc -l < "$BUILD_DIR/$id/requirements.lock") wheels"
    done
}

# ------------------------------------------------------------------ running playbooks

json_vars() {  # key value ... -> a JSON object (so that paths with spaces survive)
    "$VENV/bin/python" -c 'import json, sys; a = sys.argv[1:]; print(json.dumps(dict(zip(a[::2], a[1::2]))))' "$@"
}

playbook() {  # playbook.yml [ansible-playbook args...]
    local book=$1
    shift
    log "ansible-playbook $book $*"
    "$VENV/bin/ansible-playbook" -i "$INVENTORY" "$ANSIBLE_DIR/$book" "$@" "${ANSIBLE_EXTRA[@]}"
}

limit_for() {
    case $1 in
        all) echo all ;;
        db | compute | web) echo "$1" ;;
    esac
}

release_for() {  # build a release for the architectures of the compute/web nodes in $1
    local pattern=$1 arches
    if [[ -n ${FALCON_RELEASE_DIR:-} ]]; then
        [[ -d $FALCON_RELEASE_DIR ]] || die "FALCON_RELEASE_DIR $FALCON_RELEASE_DIR is not a folder"
        probe_nodes "$pattern" >/dev/null
        log "installing the release in $FALCON_RELEASE_DIR (not building)"
        return
    fi
    if [[ -n ${FALCON_DEPLOY_ARCHES:-} ]]; then
        probe_nodes "$pattern" >/dev/null
        read -r -a arches <<<"$FALCON_DEPLOY_ARCHES"
    else
        local found
        found=$(probe_nodes "$pattern") || exit $?
        mapfile -t arches <<<"$found"
    fi
    build_release "${arches[@]}"
}

# ------------------------------------------------------------------ actions

ssh_follow_logs() {  # TARGET [journalctl args]
    local target=$1
    shift
    local jargs=("$@")
    [[ ${#jargs[@]} -gt 0 ]] || jargs=(--follow --lines=50)
    local hosts
    mapfile -t hosts < <("$VENV/bin/ansible" "$(limit_for "$target")" -i "$INVENTORY" --list-hosts \
        2>/dev/null | sed -n 's/^ \{4,\}//p')
    [[ ${#hosts[@]} -gt 0 ]] || die "no hosts for $target in $INVENTORY"
    local pids=() host
    for host in "${hosts[@]}"; do
        local argv=()
        mapfile -d '' -t argv < <("$VENV/bin/python" "$DEPLOY_DIR/ssh_argv.py" \
            "$VENV/bin/ansible-inventory" "$INVENTORY" "$ANSIBLE_DIR" "$host")
        [[ ${#argv[@]} -gt 0 ]] || die "cannot work out how to reach $host"
        local prefix="$host"
        ( "${argv[@]}" journalctl --no-pager --output=short-iso \
            --unit='falcon*' --unit='postgresql*' --unit=nginx.service "${jargs[@]}" </dev/null \
            | sed -u "s/^/[$prefix] /" ) &
        pids+=($!)
    done
    trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
    local rc=0 pid
    for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
    return "$rc"
}

main() {
    [[ $# -ge 2 ]] || usage
    local action=$1 target=$2
    if [[ $action == build ]]; then  # ARCH... instead of a target; needs no inventory
        shift
        ensure_venv
        build_release "$@"
        printf '%s\n' "$BUILD_DIR/release"
        return
    fi
    shift 2
    case $target in all | db | compute | web) ;; *) die "unknown target '$target' (all, db, compute, web)" 2 ;; esac
    local limit app_pattern
    limit=$(limit_for "$target")
    case $target in
        all) app_pattern='compute:web' ;;
        db) app_pattern='' ;;
        *) app_pattern=$target ;;
    esac

    case $action in
        setup | deploy | status | logs | start | stop | restart | backup | restore) ;;
        -h | --help | help) usage ;;
        *) die "unknown action '$action' (setup, deploy, status, logs, start, stop, restart, backup, restore)" 2 ;;
    esac
    check_inventory
    # the operator's mistakes first, before a minute of making the Ansible venv
    case $action in
        setup | deploy | backup | restore) check_secrets ;;
    esac
    ensure_venv
    local base_vars
    case $action in
        setup)
            local book=site.yml
            [[ $target != all ]] && book=$target.yml
            probe_nodes "$limit" >/dev/null
            if [[ -n $app_pattern ]]; then
                release_for "$app_pattern"
            fi
            base_vars=$(json_vars falcon_secrets_file "$SECRETS" falcon_app_release_dir "$RELEASE_DIR")
            playbook "$book" -e "$base_vars" "$@"
            ;;
        deploy)
            [[ -n $app_pattern ]] || die "nothing of Falcon's code runs on db: use 'setup db'" 2
            release_for "$app_pattern"
            base_vars=$(json_vars falcon_secrets_file "$SECRETS" falcon_app_release_dir "$RELEASE_DIR")
            playbook deploy.yml --limit "$app_pattern" -e "$base_vars" "$@"
            ;;
        status)
            probe_nodes "$limit" >/dev/null
            playbook status.yml --limit "$limit" "$@"
            ;;
        logs)
            ssh_follow_logs "$target" "$@"
            ;;
        start | stop | restart)
            local state=${action}ed
            [[ $action == stop ]] && state=stopped
            [[ $action == start ]] && state=started
            probe_nodes "$limit" >/dev/null
            playbook services.yml --limit "$limit" \
                -e "$(json_vars falcon_services_state "$state")" "$@"
            ;;
        backup)
            [[ $target == all || $target == db ]] || die "backup is of the database and config: use 'backup all' or 'backup db'" 2
            local dest
            probe_nodes "$limit" >/dev/null
            dest="$BACKUP_DIR/$(date -u +%Y%m%dT%H%M%SZ)"
            mkdir -p "$dest" && chmod 700 "$BACKUP_DIR" "$dest"
            playbook backup.yml --limit "$([[ $target == all ]] && echo all || echo db)" \
                -e "$(json_vars falcon_secrets_file "$SECRETS" falcon_backup_dir "$dest")"
            log "backup in $dest"
            printf '%s\n' "$dest"
            ;;
        restore)
            [[ $target == all || $target == db ]] || die "restore puts the database and config back: use 'restore all' or 'restore db'" 2
            local from=${1:-}
            if [[ -z $from ]]; then
                from=$(find "$BACKUP_DIR" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | sort | tail -n 1)
                [[ -n $from ]] || die "no backup in $BACKUP_DIR: give the backup folder (deploy.sh restore all DIR)"
            fi
            from=$(abspath "$from")
            [[ -f $from/falcon.dump ]] || die "$from has no falcon.dump"
            probe_nodes all >/dev/null
            log "restoring $from"
            playbook restore.yml \
                -e "$(json_vars falcon_secrets_file "$SECRETS" falcon_restore_dir "$from")"
            ;;
        -h | --help | help) usage ;;
        *) die "unknown action '$action' (setup, deploy, status, logs, start, stop, restart, backup, restore)" 2 ;;
    esac
}

main "$@"
