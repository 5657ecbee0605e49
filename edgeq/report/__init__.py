"""report.json (one schema every stage writes and ``check`` reads), budgets, writers."""
