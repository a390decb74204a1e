"""Provides the subscriber consumers, one module per transport."""
