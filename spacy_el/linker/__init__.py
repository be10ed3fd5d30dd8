"""The `sap_linker` component."""
