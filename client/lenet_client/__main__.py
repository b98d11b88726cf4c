from lenet_client.predict import main_exit

main_exit()
