"""`blocktrace docs`: the diagrams and pictures in markdown pages, kept what blocktrace prints."""
