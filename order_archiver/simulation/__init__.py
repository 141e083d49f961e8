"""The simulation: realistic generated data (Faker) and the embedded database (mongomock)."""
