"""HTTP only: parse the request, call a service, render the answer or the error."""
