"""Every side effect of castwall, each behind a small interface that tests replace."""
