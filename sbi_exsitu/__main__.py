from sbi_exsitu.cli import main

main()
