"""Customer voice: surveys (NPS, CSAT, CES), feedback sentiment, feature requests and support tickets."""
