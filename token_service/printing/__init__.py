"""Print jobs: created for a token, leased to one printer's agent, acknowledged once printed."""
