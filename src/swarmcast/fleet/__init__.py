"""The broadcaster's fleet: start, stop and reconcile many node processes from streaming-utils' config files.

config.py (the files, checked) · jsonc.py (JSON with // comments and trailing commas) · controller.py (local or
remote stream lists, POSTs) · commandline.py (the engine command lines streaming-utils builds) · processes.py (pid
files, lock, start, SIGTERM/SIGKILL) · records.py (what this fleet started) · reconcile.py (plan + apply) ·
push.py (monitor, metadata, restore) · receiver.py (a small controller that stores what it gets) · systemd.py.
"""
