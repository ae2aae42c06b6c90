"""Helpers the tests share: accounts, live servers, browser contexts and page objects."""
