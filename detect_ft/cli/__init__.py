"""Command-line front end; the library never imports from here."""
