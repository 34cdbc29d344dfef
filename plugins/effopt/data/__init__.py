"""Data that ships in the package: the bundled rate table (effopt prices build writes it)."""
