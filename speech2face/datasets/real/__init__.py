"""Real data to records with Apache Beam: AVSpeech, VoxCeleb2 or a pairs CSV (docs/data.md).
`build.build_records` runs the pipeline."""
