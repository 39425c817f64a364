"""The validator's API for third parties: ``routes`` (the app), ``relay`` (sealed bytes to miners), ``openai`` (the validator-visible path), ``quota``."""
