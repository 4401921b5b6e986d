"""Browser tier: pages driven in Debian's headless Chromium through Selenium and chromedriver."""
