"""Pure records and rules every layer shares (the job state machine, sizes, errors, settings): stdlib only."""
