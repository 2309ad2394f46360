"""Local mode (`init(local_mode=True)`): every task and actor in the driver, one at a time.

See runtime.py.
"""
