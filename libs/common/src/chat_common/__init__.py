"""Shared library of the chat services: settings, JWT, DTOs, problems, logs, health, metrics."""
