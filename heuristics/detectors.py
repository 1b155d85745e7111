"""Imports every detector module so their rules register; the registry decides what runs."""
