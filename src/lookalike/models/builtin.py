"""Imports every built-in model module so that their ``@register_model`` decorators run."""
