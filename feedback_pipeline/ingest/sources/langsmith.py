"""stub"""


def convert(con):
    pass
