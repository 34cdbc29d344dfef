"""Triggers of effopt's deferrable sensors and operators.

They run in the triggerer, so they live in the plugin package (importable there), never in the DAG bundle.
"""
