"""Market data: flat-file import and sync, the Parquet store, data checks, the sample data set."""
