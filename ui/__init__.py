"""The two front ends: the web app (one module per tab, each `create_<tab>_tab(...)`, wired in ui/app.py) and the
command line (ui/cli.py, what `python app.py COMMAND` runs). They may import every back-end package and storage;
nothing imports them but app.py. Neither imports torch when it is imported: the page and `--help` start in seconds."""
