"""The test server, a package apart from the product (README.md): nx-27017, a MongoDB
wire-protocol stand-in, made to refuse what MongoDB refuses; the tests' fault launcher and
proxy; its own tests. Development only, never in the image."""
