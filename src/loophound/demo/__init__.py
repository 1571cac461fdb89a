"""A small Django project with blocking and clean views, served by ``loophound demo``."""
