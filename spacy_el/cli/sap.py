"""(commands registered on the shared app by this module)"""
