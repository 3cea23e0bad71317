"""The Ray adapter: Ray's dashboard REST APIs (Jobs, Serve) over aiohttp; the gateway never imports ray."""
