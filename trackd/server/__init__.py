"""Processes: the supervisor (pipeline + admin API) and the gateway workers it starts."""
