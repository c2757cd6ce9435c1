"""mnist-softmax: a command-line lab for softmax regression on MNIST.

    $ mnist-softmax download
    $ mnist-softmax train --loss fused
    $ mnist-softmax compare
"""

__version__ = "0.1.0"
