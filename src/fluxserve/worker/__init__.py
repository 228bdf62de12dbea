"""The runner: claims jobs from the store, runs them on an engine, records each job's one end. No torch here."""
