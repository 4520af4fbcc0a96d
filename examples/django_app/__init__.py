"""iamscope in an existing Django project: wrap the WSGI app once, decorate views."""
