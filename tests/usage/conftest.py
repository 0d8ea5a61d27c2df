"""Usage metering on the data plane: unit tests of the extraction pieces and the spool, and
end-to-end tests with real control-plane and data-plane processes and the fake provider."""
