"""`twtrace export`: recordings converted for other tools (Perfetto)."""
