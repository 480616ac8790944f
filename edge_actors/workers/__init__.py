"""Worker processes: sampler (system health), drift, uploader."""
