"""`python -m lenet_client`: the `lenet-predict` command."""

from lenet_client.predict import main_exit

if __name__ == "__main__":
    main_exit()
