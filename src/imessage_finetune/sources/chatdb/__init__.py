"""Reading the macOS Messages database: tables, message kinds, typedstream, dates."""
