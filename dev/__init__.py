"""Development only, never in the image: the development server (nx-27017 with its departures
from MongoDB fixed) and the definitions of what MongoDB 4.4-8.0 accept, which it enforces."""
