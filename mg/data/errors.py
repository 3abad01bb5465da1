"""The one exception of the data package.

Every bad input (a misspelt config field, an unknown dataset, a missing or wrong
data folder, an unsatisfiable partition, a dataset that is not prepared locally)
raises :class:`DataError` with a message that says what is wrong and what to do,
so that the entry point can print it and exit non-zero without a traceback.
"""


class DataError(Exception):
  """Bad data input; the message says what is wrong and how to fix it."""
