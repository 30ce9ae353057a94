"""Typer command-line interface: parse, call one use-case function, render. No logic here."""
