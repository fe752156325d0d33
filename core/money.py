"""Money conventions every app shares: amounts are integers of minor units, never floats."""

# Largest amount one transfer (and so one stake or deposit) may carry: far below bigint's
# limit, so that sums of many transfers on one account cannot overflow.
MAX_AMOUNT = 10**15
