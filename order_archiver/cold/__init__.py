"""The cold tier (#35): archived orders older than ARCHIVE_COLD_AFTER, moved out of the archive
collection into Parquet files partitioned by delivery month, on the user's own storage
(``file://`` or ``s3://``). ``schema`` says what a file holds, ``store`` where files live,
``files`` how one is written, checked and read, ``move`` the crash-safe move itself."""
