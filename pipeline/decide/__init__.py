"""A part's verdict, the judge, the line alarm: the NG rule written once."""
