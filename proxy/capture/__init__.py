"""The capture of exchanges: redaction, the capture database, export and offline replay."""
