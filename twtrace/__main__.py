from twtrace.cli import main

main()
