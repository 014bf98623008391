"""Test support shared by the chat backend suites: fault-injecting network pieces."""
