"""The bad-input catalogue (issue 11): one test per case; see docs/reliability.md."""
