"""One module of queries per resource; services own transactions and rules."""
