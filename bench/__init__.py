import time

#: When `make bench` started: the soak gets what is left of the time budget.
STARTED_AT = time.monotonic()
