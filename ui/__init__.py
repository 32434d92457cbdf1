"""The web app: one module per tab, each `create_<tab>_tab(...)`, wired in ui/app.py."""
