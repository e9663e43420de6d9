"""End to end: the examples as their READMEs run them (headless Chromium too),
Autobahn|Testsuite, the soak, and memory under connection churn."""
