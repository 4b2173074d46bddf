"""prm_tools"""
