"""Test support shared by the chat backend suites: fault-injecting network pieces, STOMP
clients, and waiting on a condition (:mod:`chat_testing.waiting`)."""
