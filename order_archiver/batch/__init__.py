"""The parts of a batch run that ``archiver.BatchArchiver`` orchestrates: what it is asked and
reports, which pass it makes, what it counts, the rejected orders it lists, the samples it keeps."""
